"""sublab: Kubernetes clusters made of Linux network namespaces (nodes, pods, Services, kube-proxy rules,
cluster DNS), so the walkthrough runs on one machine without Docker. Command: `sublab` (`cli.main`)."""
