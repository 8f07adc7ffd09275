"""Small helpers shared by every stage: hashing, atomic writes, parsing of CLI values."""
