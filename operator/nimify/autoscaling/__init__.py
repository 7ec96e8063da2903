"""What autoscaling a NimService means outside the operator's own objects: the metrics and their PromQL,
prometheus-adapter's rules, and which autoscaler a NimService gets. (How the controller reads an autoscaler's
status is `nimify.controller.autoscaling`.)"""
