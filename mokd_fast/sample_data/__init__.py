"""Generated data: the demo's photographs and the learning proof's shapes."""
