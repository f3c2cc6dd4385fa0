"""The local environment: everything needed to run pull-secret-webhook for real on one machine.

- ``controlplane``: builds (once, cached) and runs etcd, kube-apiserver and
  kube-controller-manager; ``python -m devenv.controlplane``.
- ``node``: builds and runs containerd, the kubelet and kube-scheduler against it, the pause and
  test images, and the webhook's own image; ``python -m devenv.node``.
- ``peers``: what the webhook talks to besides Kubernetes: the Azure emulator (Entra ID, IMDS,
  ACR's token endpoints), moto for AWS, real OCI registries and skopeo.
- ``stack``: the whole product wired together (webhook replicas, peers, registration).
- ``playground``: ``make run``.
- ``support``: sample configs and reviews, an in-memory Kubernetes and a hot-path manager shared
  by tests and benchmarks.

Its self-tests live in ``devenv/tests``; the product's behaviour tests live in ``tests/``.
"""
