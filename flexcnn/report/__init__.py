"""``flexcnn report``: one self-contained, offline HTML page for a study or a folder of run folders.

- ``records``: one trial or run as the report sees it (metrics from summary.json first, user attributes second);
- ``study_source`` / ``folder_source``: gather a study's trials, or the run folders under a folder;
- ``figures`` / ``curves``: Optuna's plots and the learning and ROC curves, as plotly HTML and PNGs;
- ``tables`` / ``page``: the sortable leaderboard and the page that ties everything together;
- ``build``: writes the page and its PNGs.
"""
