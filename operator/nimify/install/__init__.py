"""What installing the operator on a cluster takes, generated from the code: its RBAC for the Helm chart."""
