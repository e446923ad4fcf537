"""StarCard verifier: ``verifier.core`` (the pure trust spec) and the services around it."""
