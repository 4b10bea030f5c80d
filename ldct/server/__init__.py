"""What only the server needs (DESIGN.md §2): upload checks, decoding in a child process."""
