"""Pure domain: numpy + pydantic only, no I/O, no boto3."""
