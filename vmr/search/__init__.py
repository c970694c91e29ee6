"""Stage 4: a trained model (or the cosine baseline) + features -> moments in seconds.

``windows`` cuts long targets into overlapping model-sized windows, ``localizer`` is the :class:`Localizer` API
(one video, or a whole store in-process), ``plots`` draws a localization for people to look at.
"""
