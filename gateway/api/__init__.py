"""The gateway's HTTP routes, one blueprint a module: thin views over the pipeline."""
