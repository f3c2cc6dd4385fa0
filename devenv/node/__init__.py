"""A local Kubernetes node (containerd, kubelet, kube-scheduler) beside the control plane."""
