"""Redis adapters (ElastiCache in AWS, a local redis-server in the local stack)."""
