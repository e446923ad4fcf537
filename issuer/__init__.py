"""StarCard issuer: credit platform, grading, issuance workflow, status-list publisher."""
