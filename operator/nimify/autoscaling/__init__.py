"""What autoscaling a NimService means outside the operator's own objects: the metrics and their PromQL,
prometheus-adapter's rules, which autoscaler a NimService gets, and how to read an autoscaler's status."""
