"""Acting in the real environment: policies and the (Ray-parallel) episode runners."""
