"""Small helpers shared by every layer (no dependency on the rest of soco)."""
