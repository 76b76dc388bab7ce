"""svq's eval package."""
