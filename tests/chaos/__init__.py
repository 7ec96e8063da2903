"""The chaos suite: faults and hostile input against the real control plane, each test bounded in time.

One module per part of the suite (issue 14):
1. operator killed at random points          (test_operator_kills.py)
2. control-plane faults: apiserver/etcd restarts, watch expiry, throttling (test_control_plane.py)
3. data-plane faults on the real node         (test_data_plane.py; a killed Triton and an OOMKilled
   replica in tests/controller/test_real_pods.py)
4. hostile input at scale: generated specs    (test_hostile_specs.py); hostile models in
   tests/cli/test_hostile_models.py and tests/engine/test_load_probe.py
5. secrets and access: credentials never shown, claims and host paths, PodSecurity `restricted`, SSRF
   (test_secrets_and_access.py)
6. model storage: S3 (moto's server) and a Hugging Face Hub on loopback, with their faults
   (test_model_storage.py)

`bash .ci/run` runs every module at the CI scale; `NIMIFY_CHAOS_SCALE=full bash hack/test.sh -m chaos` runs
the long version (docs/development.md). Each test adds its figures to the table printed at the end.
"""
