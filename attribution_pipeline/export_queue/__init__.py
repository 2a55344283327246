"""The snapshot export queue: Prosper202's `202_attribution_exports` requests turned into files and signed webhooks."""
