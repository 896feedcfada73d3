"""MCL-MoCo (AAAI 2022, winycg/MCL): peers with EMA key encoders and queues, contrasting within and across peers."""
