"""`edgeway demo`: the seed's architecture running on loopback, with edgeway in every role."""
