"""DoGo (Distill on the Go, CVPRW 2021): two peers, each self-supervised, distilling their similarity structure."""
