"""Stacks: each only composes constructs from :mod:`infra_cdk.constructs`."""
