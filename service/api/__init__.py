"""The REST API: jobs, students, health and metrics (DESIGN.md section 9)."""
