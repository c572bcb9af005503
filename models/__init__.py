"""Framework-free model core shared by training and service: network, artifacts, MC dropout."""
