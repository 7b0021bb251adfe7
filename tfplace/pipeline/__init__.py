"""Pipeline planning (pure): schedules, the queue deadlock check, stage partition, the plan value."""
