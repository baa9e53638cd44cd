return { where = "app folder" }
