-- Aggregated events (repeated rejected tokens) carry how many repeats they stand for.
ALTER TABLE audit_events ADD COLUMN count INTEGER;
