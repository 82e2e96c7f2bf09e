"""The feature import job: check a feature file and publish it as one version of an online
store (embedded Arrow tables or Redis), atomically."""
