"""QA templates and the builder that turns annotated units into GEM samples."""
