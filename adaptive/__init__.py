"""Adaptive extraction: spend each round of paid queries where the student is still unsure.

`adaptive.run.steal` pays a first share of the budget as a one-shot extraction would, trains a
student, scores a pool of unpaid candidate queries with it (`adaptive.informativeness`), pays
for the best (`adaptive.choose`), trains again from the last student's weights, and so on until
the budget is spent; the final student is trained on everything paid.
"""
