"""The transaction coordinator (transactional ids, epochs, commit and abort)."""
