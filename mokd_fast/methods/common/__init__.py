"""What several methods share: optimisers, schedules, EMA, monitors, queues, backward."""
