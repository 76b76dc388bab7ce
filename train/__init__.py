"""svq's train package."""
