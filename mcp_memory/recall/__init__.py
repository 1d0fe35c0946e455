"""Finding memories: fusion and ranking, the keyword index, the vector cache, time in queries."""
