"""The active-learning simulation harness: campaigns on labelled datasets whose labels the
``lookup`` level reveals (:mod:`.harness`), and the summary of their results (:mod:`.summary`)."""
