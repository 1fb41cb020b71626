"""The AWS CDK app of ensemble-trader: one construct per capability, one stack composing them."""
