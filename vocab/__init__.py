"""svq's vocab package."""
