"""One job from its description to its records: job identity, the distill-then-evaluate pipeline, provenance,
stale-record checks."""
