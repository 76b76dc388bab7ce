"""svq's llm package."""
