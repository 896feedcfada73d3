"""What every layer of ``mokd_fast`` may use: reading and writing files safely."""
