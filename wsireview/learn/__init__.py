"""Learning: attention-MIL, training, scoring, active-learning queues, the retrain round, evaluation."""
