"""Pure rules of the service: the model catalog and prices, request rules, webhook signatures."""
