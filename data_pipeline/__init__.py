"""Sources -> faces -> QA writers -> validation -> dataset on disk."""
