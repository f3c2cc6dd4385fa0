"""The admission decision and what it reads, as pure functions: reviews, image references, needs."""
