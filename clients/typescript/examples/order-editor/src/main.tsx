import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import "@roster/react/styles.css";
import "./app.css";
import { App, readConfig } from "./App";

const root = createRoot(document.getElementById("root")!);
const config = readConfig(window.location.search);
root.render(
  <StrictMode>
    <App config={config} />
  </StrictMode>,
);
