"""`srft view`: a local web app to read trajectories, compare annotation sources and label steps by hand.

Modules: `app` (config, security middleware, serve), `routes` (pages and the label endpoint), `pages` (what a
page shows, as data), `store` (trajectory store, annotation sources, agreement), `db` (human labels in SQLite),
`masking` (the token-mask view, through `srft.dataset.masks`). Templates and static files ship in the package.
"""
