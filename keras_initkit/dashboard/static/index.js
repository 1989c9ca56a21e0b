// TensorBoard's entry point for the initkit tab: TensorBoard loads this module in the
// plugin's iframe (base URL data/plugin/initkit/) and calls render().
import {httpSource, mount} from './app.js';

export async function render() {
  document.body.style.margin = '0';
  const root = document.createElement('div');
  root.id = 'initkit';
  document.body.append(root);
  await mount(root, httpSource('.')).ready;
}
