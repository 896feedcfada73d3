"""L-MCL (TPAMI 2023, winycg/L-MCL): supervised layer-wise mutual contrastive learning between peers (building blocks)."""
