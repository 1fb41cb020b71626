"""One construct per capability; :mod:`infra_cdk.stacks.trader` composes them."""
