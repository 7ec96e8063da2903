"""Nimify: a Kubernetes operator that serves ONNX and TensorRT models on NVIDIA Triton Inference Server."""

__version__ = "0.1.0.dev0"
