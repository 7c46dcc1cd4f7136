"""Reports of a study's results.

load: metric directions and the members x metrics frame; statistics: seed statistics, paired
deltas, coverage (and `build`: load + summarize); tables: every table format; scope: a search
study's final-seed view; search: a search's trials and best configurations; curves: values
reported per step; plot: figures; html: the one-page report; console: printing tables whole.
"""
