const player = () => document.querySelector('#aa-video video');
element.addEventListener('click', (event) => {
  const step = event.target.closest('[data-start]');
  const video = player();
  if (!step || !video) return;
  video.currentTime = parseFloat(step.dataset.start);
});
document.addEventListener('timeupdate', (event) => {
  const video = event.target;
  if (!(video instanceof HTMLVideoElement) || !video.closest('#aa-video')) return;
  const t = video.currentTime;
  element.querySelectorAll('[data-start]').forEach((step) => {
    const on = t >= parseFloat(step.dataset.start) - 1e-3 && t < parseFloat(step.dataset.end);
    step.classList.toggle('aa-now', on);
  });
}, true);
