"""flexcnn."""
