"""The SQL database: the source of truth for keys, jobs and students (DESIGN.md section 9)."""
