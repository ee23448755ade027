"""Memory, time and money for a training run, before any weights are downloaded.

``shapes`` (model facts), ``devices`` (GPU table, prices, this CPU measured live), ``estimate`` (the
arithmetic), ``calibrate`` (utilization factors refitted from recorded runs), ``record`` (the plan and the
measurement in every run's run.json).
"""
