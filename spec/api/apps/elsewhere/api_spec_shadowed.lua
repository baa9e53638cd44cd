return { where = "elsewhere" }
